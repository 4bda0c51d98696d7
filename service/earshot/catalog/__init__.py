"""The catalog job: `earshot embed` turns folders, files and manifests into one Parquet table."""
