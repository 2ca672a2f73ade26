"""Screening platform stills straight from their JPEG DCT coefficients."""
