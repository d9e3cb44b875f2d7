"""The eval job: offline evaluation of pipelines on BEIR / TREC collections with ir-measures."""
