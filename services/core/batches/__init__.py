"""Batches in the OpenAI Batch API shape: creating and cancelling them (`service`), turning
the input file into jobs (`expand`), tracking and closing them (`finalize`) and their
output and error files (`results`)."""
