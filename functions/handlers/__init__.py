"""Thin AWS Lambda entry points of the LimeLight workflow (one container image, one module each).

start -> (Step Functions) segment -> anonymize (Map, one per segment) -> reassemble; failure is the
Catch target. Handlers move objects between S3 and local files and call the engine
(`limelight.segments`, `limelight.pipeline`, `limelight.video.probe`); they hold no video logic.
"""
