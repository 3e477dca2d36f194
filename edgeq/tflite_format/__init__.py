"""The .tflite flatbuffer format without TensorFlow: graph.py (the in-memory model), writer.py, reader.py and
options.py (operator options tables, generically from the schema); flatbuffer.py imports them all."""
