"""The kiosk fleet: many kiosks, one central PostgreSQL store, nothing lost while the net is down.

Each kiosk keeps its own SQLite store (realtime.kiosk.store) as the durable buffer: every
change is also written to the store's outbox in the same transaction, and a background
forwarder (forwarder.py) copies the outbox's rows to the central store in batches,
idempotent upserts keyed by (kiosk id, local key), marking them sent only after the
central commit. The central store (migrations.py) holds the same tables with a kiosk id
in every key, plus one row per kiosk with its labels (network > site > location >
kiosk) and last contact; every kiosk logs in as its own database role, which
row-level security confines to its own rows (roles.py). The dashboard and reports
read either store through one query layer (realtime.kiosk.queries).

    python -m realtime.fleet migrate --store postgresql://admin@central/fleet
    python -m realtime.fleet add-kiosk --store ... --kiosk-id store-042
    python run_camera.py --source 0 --kiosk --data-dir DIR --central postgresql://kiosk_store_042@central/fleet \
        --kiosk-id store-042 --site paris --location entrance

Privacy: only the kiosk's anonymous statistics travel (visit rows, per-minute
aggregates, runs, gaps, live counts); never an image, crop or embedding.
"""
