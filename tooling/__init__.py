"""Developer tooling beside the product: test scenes, benchmarks and the kiosk soak.

    python -m tooling.scenes --out /tmp/demo.mp4 --people 4 --seconds 10
    python -m tooling.bench --source clip.mp4 --json bench.json
    python -m tooling.bench_report bench.json --plot bench.png
    python -m tooling.soak --minutes 60 --fps 15

Modules: scenes (synthetic multi-face videos with ground truth, from ../shared), bench
(speed against decoding alone and a naive loop), bench_report (reports as a table and a
plot), soak (the kiosk's memory over an hour of synthetic traffic).

These import the product (`realtime`); the product never imports them.
"""
