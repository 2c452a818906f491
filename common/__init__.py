"""Small helpers every package may import; imports nothing else of this project.

* :mod:`common.files`: atomic, durable writes (temp file in the same folder, fsync, rename, fsync the folder) of
  text, JSON, bytes and whole directories; the one place that writes a file so that it is never half there.
* :mod:`common.names`: the closest known name for an unknown one ("did you mean ...?" hints).
"""
