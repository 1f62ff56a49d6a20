"""sf.im"""
