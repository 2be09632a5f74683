project = "instanceha"
copyright = "instanceha developers"
extensions = ["oslo_config.sphinxext"]
exclude_patterns = []
html_theme = "alabaster"
