"""Built-in provider plugins, registered under the `hooktrack.providers` entry-point group."""
