"""Helpers the worker gives WSGI applications."""


class FileWrapper:
    """wsgi.file_wrapper: a file-like object as an iterable of blocks.

    close() closes the file, so the worker's close() of the response
    closes it.
    """

    def __init__(self, filelike, blksize=65536):
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self):
        return self

    def __next__(self):
        data = self.filelike.read(self.blksize)
        if data:
            return data
        raise StopIteration
