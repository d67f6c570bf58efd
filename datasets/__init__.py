"""Data sets as samples and shards: native layouts read (MVTec-AD, VisA, Real-IAD, folders,
the generated demo set), written into WebDataset shards with a manifest, and streamed back.

May import: numpy, PIL, torch, webdataset; never `decodiff.models`, `decodiff.reports` or `decodiff.harness`.
"""
