"""The centre's Faust applications: assembly, page QC, OCR, verdicts."""
