import os
import sys

# doc/source/_ext: the engine-table directive (the decision tables, rendered from the code)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "_ext"))

project = "instanceha"
copyright = "instanceha developers"
extensions = [
    # ".. show-options::" renders the options from the code (the
    # oslo.config.opts entry points), so the reference never drifts
    "oslo_config.sphinxext",
    # writes _static/instanceha.conf.sample at each build, with the same
    # generator input as "tox -e genconfig"
    "oslo_config.sphinxconfiggen",
    # ".. engine-table:: NAME" renders an engine decision table from its rules
    "engine_tables",
]
_top = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
config_generator_config_file = [
    (os.path.join(_top, "etc", "instanceha", "instanceha-config-generator.conf"),
     "_static/instanceha"),
]
exclude_patterns = []
html_theme = "alabaster"
