"""The process around the web app: serving, workers and signals, reloads, and the demo."""
