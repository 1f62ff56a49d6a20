"""sf.tl."""
