"""Real-time age and gender analytics for video."""
