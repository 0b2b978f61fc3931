"""Media handling: FLAC and MP4 structures, remuxing, tagging, verification, paths."""
