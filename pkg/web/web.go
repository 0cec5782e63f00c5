// Package web serves the browser chat page, embedded in the binary.
package web

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var static embed.FS

// Paths are the routes Handler serves: the page, and its icon under both
// names browsers ask for (the page names /favicon.svg; some clients ask for
// /favicon.ico regardless). The node routes exactly these to Handler.
var Paths = []string{"/", "/favicon.svg", "/favicon.ico"}

// Handler serves the page and its icon.
func Handler() http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embed pattern guarantees the directory
	}
	files := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/favicon.ico" {
			// An SVG under the .ico name: every current browser reads
			// it by its content type.
			w.Header().Set("Content-Type", "image/svg+xml")
			http.ServeFileFS(w, r, sub, "favicon.svg")
			return
		}
		files.ServeHTTP(w, r)
	})
}
