package server

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync/atomic"

	"github.com/berthio/berth/platform"
)

// Tokens is a reloadable set of bearer tokens. Only their SHA-256 digests
// are kept, and a presented token is compared with every one in constant
// time, so neither the file's contents nor timing tell an attacker anything.
type Tokens struct {
	path    string
	digests atomic.Pointer[[][sha256.Size]byte]
}

// LoadTokens reads a token file: one token per line, or its SHA-256 as
// "sha256:<64 hex digits>"; blank lines and lines starting with # are
// skipped. A file with no token is an error: it would lock everyone out.
func LoadTokens(path string) (*Tokens, error) {
	t := &Tokens{path: path}
	if err := t.Reload(); err != nil {
		return nil, err
	}
	return t, nil
}

// Reload reads the file again; on error the tokens in use stay.
func (t *Tokens) Reload() error {
	data, err := os.ReadFile(t.path)
	if err != nil {
		return fmt.Errorf("reading token file: %w", err)
	}
	var digests [][sha256.Size]byte
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if hexDigest, ok := strings.CutPrefix(line, "sha256:"); ok {
			raw, err := hex.DecodeString(hexDigest)
			if err != nil || len(raw) != sha256.Size {
				return fmt.Errorf("token file %s, line %d: sha256: must be followed by 64 hex digits", t.path, n)
			}
			digests = append(digests, [sha256.Size]byte(raw))
			continue
		}
		digests = append(digests, sha256.Sum256([]byte(line)))
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("token file %s: %w", t.path, err)
	}
	if len(digests) == 0 {
		return fmt.Errorf("token file %s has no token", t.path)
	}
	t.digests.Store(&digests)
	return nil
}

// Valid reports whether token is one of the set.
func (t *Tokens) Valid(token string) bool {
	digest := sha256.Sum256([]byte(token))
	match := 0
	for _, d := range *t.digests.Load() {
		match |= subtle.ConstantTimeCompare(digest[:], d[:])
	}
	return match == 1 && token != ""
}

// authorized checks the request's bearer token when tokens are configured;
// on failure it has answered 401.
func (s *Server) authorized(w http.ResponseWriter, r *http.Request) bool {
	if s.tokens == nil || r.URL.Path == "/healthz" {
		return true
	}
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if ok && s.tokens.Valid(strings.TrimSpace(token)) {
		return true
	}
	msg := "a bearer token is required (Authorization: Bearer <token>)"
	if ok {
		msg = "the bearer token is not valid"
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="berth"`)
	s.writeError(w, r, http.StatusUnauthorized, platform.Errorf(platform.EINVALID, "%s", msg))
	return false
}
