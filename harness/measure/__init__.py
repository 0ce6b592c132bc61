"""Pure metric functions over records: percentiles, validity, summary rows, allowable-throughput search."""
