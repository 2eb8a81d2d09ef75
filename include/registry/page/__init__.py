"""The Models page: its data, the in-memory index, HTML (Jinja2 templates) and the SVG chart."""
