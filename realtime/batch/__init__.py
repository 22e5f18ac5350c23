"""Recorded video at archive scale: `python -m realtime.batch INPUT... --out DIR`, on Ray.

    inputs.py    which files: files, folders (recursive, by extension), lists of paths
    layout.py    the --out folder: names, and the checks that keep the user's files safe
    manifest.py  every file's status and key (path, size, mtime, model SHA-256): resume
    worker.py    FileWorker, the Ray actor: detector and model once, file after file (or chunk after chunk)
    chunks.py    long files in time chunks: the plan, one chunk's run, the merge
    long_files.py  the driver's side of a file in chunks: answers gathered, merged, written
    runner.py    the driver: plan, ActorPool, manifest as answers come, tables
    results.py   people.parquet / people.csv and the final table
    progress.py  the live display (files, video hours, ETA)

Ray is an extra (`pip install -e ".[cpu,cluster]"`); nothing here imports it until a
run needs it. docs/architecture.md has the map.
"""
