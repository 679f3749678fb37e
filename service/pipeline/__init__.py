"""Pipeline stages, one per file: audio -> resample -> vad -> features -> encoder -> decoder -> assembly."""
