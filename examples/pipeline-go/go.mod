module example.com/sdk-example

go 1.19

require gofer.dev/sdk/config v0.0.0

// The SDK is not published to a module proxy; use it from this repository.
replace gofer.dev/sdk/config => ../../sdk-go/config
