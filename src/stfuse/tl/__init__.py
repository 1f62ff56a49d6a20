"""sf.tl"""
