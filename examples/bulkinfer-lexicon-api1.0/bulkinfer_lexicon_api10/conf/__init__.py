# Hydra reads configs from a package only if it has an __init__.py; this folder holds YAML only.
