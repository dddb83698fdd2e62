//! Prometheus exporter for ComfyControl workflows.
