"""Scrapes a Prometheus endpoint and prints its samples as JSON, parsed by the
official Python client's parser (not rmicro's code).

    python scrape_metrics.py http://127.0.0.1:9093/metrics
"""
import json
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

with urllib.request.urlopen(sys.argv[1], timeout=10) as response:
    content_type = response.headers["Content-Type"]
    text = response.read().decode("utf-8")

samples = [
    {"name": sample.name, "labels": sample.labels, "value": sample.value}
    for family in text_string_to_metric_families(text)
    for sample in family.samples
]
print(json.dumps({"content_type": content_type, "samples": samples}))
