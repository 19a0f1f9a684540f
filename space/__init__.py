"""The ConfounderGAN Space: ``app.py`` (the Gradio page) over ``protect_handler.py`` (the image processing)."""
