package platform

import (
	"errors"
	"fmt"
	"io"
	"testing"
)

func TestErrorCodeAndMessage(t *testing.T) {
	inner := Errorf(ENOTFOUND, "node %q not found", "n1")
	tests := []struct {
		name     string
		err      error
		code     string
		message  string
		errorStr string
	}{
		{"nil", nil, "", "", ""},
		{"plain error", errors.New("disk on fire"), EINTERNAL, "internal error", "disk on fire"},
		{"wrapped plain error", fmt.Errorf("saving: %w", io.ErrUnexpectedEOF), EINTERNAL, "internal error", "saving: unexpected EOF"},
		{"platform error", inner, ENOTFOUND, `node "n1" not found`, `node "n1" not found`},
		{"wrapped once", fmt.Errorf("deprovision: %w", inner), ENOTFOUND, `node "n1" not found`, `deprovision: node "n1" not found`},
		{"wrapped twice", fmt.Errorf("a: %w", fmt.Errorf("b: %w", inner)), ENOTFOUND, `node "n1" not found`, `a: b: node "n1" not found`},
		{"joined", errors.Join(io.EOF, inner), ENOTFOUND, `node "n1" not found`, "EOF\nnode \"n1\" not found"},
		// The first *Error in the chain decides, not the innermost.
		{
			"outer platform error wins",
			Wrap(EUNAVAILABLE, inner, "engine down"),
			EUNAVAILABLE, "engine down", `engine down: node "n1" not found`,
		},
		{"wrap with plain cause", Wrap(ECONFLICT, io.EOF, "busy %d", 3), ECONFLICT, "busy 3", "busy 3: EOF"},
		{"wrap with nil cause", Wrap(ECONFLICT, nil, "busy"), ECONFLICT, "busy", "busy"},
		{"unprocessable", Errorf(EUNPROCESSABLE, "no template for %s", "redis"), EUNPROCESSABLE, "no template for redis", "no template for redis"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ErrorCode(tt.err); got != tt.code {
				t.Errorf("ErrorCode = %q, want %q", got, tt.code)
			}
			if got := ErrorMessage(tt.err); got != tt.message {
				t.Errorf("ErrorMessage = %q, want %q", got, tt.message)
			}
			if tt.err != nil && tt.err.Error() != tt.errorStr {
				t.Errorf("Error() = %q, want %q", tt.err.Error(), tt.errorStr)
			}
		})
	}
}

func TestWrap(t *testing.T) {
	cause := io.ErrClosedPipe
	err := Wrap(EUNAVAILABLE, cause, "engine at %s is unreachable", "unix:///run/podman.sock")
	if err.Code != EUNAVAILABLE || err.Message != "engine at unix:///run/podman.sock is unreachable" || err.Err != cause {
		t.Errorf("Wrap = %#v", err)
	}
	if !errors.Is(err, cause) {
		t.Error("errors.Is(Wrap(cause), cause) = false")
	}
	if errors.Unwrap(err) != cause {
		t.Error("Unwrap does not return the cause")
	}
	var target *Error
	if !errors.As(fmt.Errorf("ctx: %w", err), &target) || target != err {
		t.Error("errors.As does not find the *Error")
	}
	if got := Errorf(EINVALID, "x %d%%", 1).Message; got != "x 1%" {
		t.Errorf("Errorf message = %q", got)
	}
	if Errorf(EINVALID, "x").Unwrap() != nil {
		t.Error("Errorf has a cause")
	}
}
