"""The web service: a FastAPI app that predicts (and explains) uploaded images with one model."""
