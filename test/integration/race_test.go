//go:build race

package integration_test

// raceEnabled says the tests run with -race; the node binary is then built
// with it too.
const raceEnabled = true
