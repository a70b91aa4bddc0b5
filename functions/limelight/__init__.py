"""LimeLight: selective face anonymization for video (every face blurred except consented ones)."""
