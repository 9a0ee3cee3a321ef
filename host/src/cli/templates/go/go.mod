module example.com/{{name}}

go 1.19

require gofer.dev/sdk/plugin v0.0.0

// The Go plugin SDK is not published yet: use it from a Gofer checkout.
replace gofer.dev/sdk/plugin => {{go_sdk}}
