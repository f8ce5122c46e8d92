"""The synthetic DFME-style micro-expression benchmark (moving here from ``microexp.data.synthetic``)."""
