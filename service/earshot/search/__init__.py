"""Search over a catalog's embeddings: `earshot index` builds an index directory from the catalog's
Parquet, `earshot serve --index` serves it at POST /v1/search.

backend.py    VectorIndex, the interface an index engine stands behind; UsearchIndex, the embedded default
directory.py  the index directory on disk: index.json, the vectors, paths.parquet (key -> path)
build.py      catalog Parquet -> index directory, incrementally (only rows not yet indexed are added)
served.py     the indexes a server has loaded, each tied to the model that embedded it
command.py    `earshot index`
"""
