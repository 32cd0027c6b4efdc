package client

import (
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/berthio/berth/platform"
)

// FuzzResponses feeds arbitrary server answers to the client's parsing:
// success bodies for every endpoint and error bodies of any status. It must
// never panic, and its errors must stay short and printable.
func FuzzResponses(f *testing.F) {
	for _, seed := range []struct {
		status int
		body   string
	}{
		{200, `{"clusters":[{"cluster_id":"c","nodes":[{"node_id":"n","agent_address":"a","node_class":"x","node_group":null}]}]}`},
		{200, `{"count":1,"node_ids":["n"]}`},
		{200, `[]`},
		{200, `{"clusters":null}`},
		{400, `{"error":true,"error_msg":"cluster.store: is required"}`},
		{404, `{"error":true,"error_msg":7}`},
		{500, `<html>oops</html>`},
		{502, ""},
		{422, `{"error_msg":"` + strings.Repeat("x", 300) + `"}`},
	} {
		f.Add(seed.status, []byte(seed.body))
	}
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		var disc platform.DiscoveryResponse
		var prov platform.ProvisionResponse
		for _, v := range []any{&disc, &prov} {
			if err := decodeObject("discover", body, v); err != nil && err.Error() == "" {
				t.Fatal("empty error")
			}
		}
		if status < 100 || status > 999 {
			status = http.StatusBadGateway
		}
		e := newError(status, body)
		msg := e.Error()
		if msg == "" || !strings.HasPrefix(msg, "platform answered") {
			t.Fatalf("error message %q", msg)
		}
		if _, fromBody := e.Body["error_msg"].(string); !fromBody && len(msg) > 1024 {
			t.Fatalf("error message of %d bytes for a body without error_msg", len(msg))
		}
		if utf8.ValidString(string(body)) && !utf8.ValidString(msg) {
			t.Fatalf("message %q is not valid UTF-8", msg)
		}
	})
}
