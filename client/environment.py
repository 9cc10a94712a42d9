"""What the client reads from its environment when its caller does not say, and where it
goes without either. An argument always wins over the environment.

The lowest module of the package: the errors name these variables in their messages,
and ``client.connection`` reads them.
"""

DEFAULT_URL = "localhost:8001"  # the server's gRPC address when nothing else is given
URL_ENV = "TRITON_URL"  # its address, or several separated by commas
TLS_CA_ENV = "DETECTOR_TLS_CA"  # path of a PEM CA certificate: connect with TLS, trusting it
API_KEY_ENV = "DETECTOR_API_KEY"  # the key of the server's restricted APIs
