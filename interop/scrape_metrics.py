"""Scrapes a Prometheus endpoint and prints its samples as JSON, parsed by the
official Python client's parsers (not rmicro's code).

    python scrape_metrics.py http://127.0.0.1:9093/metrics [--openmetrics]

With --openmetrics it asks for OpenMetrics 1.0 in `Accept` and parses the page
with the client's strict OpenMetrics parser (which also checks `# EOF`).
"""
import json
import sys
import urllib.request

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

openmetrics = "--openmetrics" in sys.argv[2:]
request = urllib.request.Request(sys.argv[1])
if openmetrics:
    request.add_header(
        "Accept", "application/openmetrics-text; version=1.0.0,text/plain;q=0.5"
    )
with urllib.request.urlopen(request, timeout=10) as response:
    content_type = response.headers["Content-Type"]
    text = response.read().decode("utf-8")

parse = openmetrics_families if openmetrics else text_string_to_metric_families
samples = [
    {"name": sample.name, "labels": sample.labels, "value": sample.value}
    for family in parse(text)
    for sample in family.samples
]
print(json.dumps({"content_type": content_type, "samples": samples}))
