module gofer.dev/sdk/config

go 1.19
