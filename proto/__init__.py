"""Generated gRPC and protobuf modules (see scripts/gen_proto.py); never edited by hand."""
