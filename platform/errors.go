package platform

import (
	"errors"
	"fmt"
)

// Error codes. They say what kind of failure happened, not where; the HTTP
// layer maps each to exactly one status.
const (
	EINVALID       = "invalid"       // the request is malformed or breaks a rule
	ENOTFOUND      = "not_found"     // the node or cluster does not exist
	ECONFLICT      = "conflict"      // the request clashes with the current state
	EUNPROCESSABLE = "unprocessable" // valid, but this platform cannot satisfy it
	EUNAVAILABLE   = "unavailable"   // the engine behind the driver cannot be reached
	EINTERNAL      = "internal"      // anything else; details are logged, not sent
)

// Error is the one error type of Berth's domain. Message is fit for the user
// who sent the request; Err, when set, is the cause and is reported as the
// error's chain for every code but EINTERNAL.
type Error struct {
	Code    string
	Message string
	// Details are extra fields for the JSON error body, such as the
	// node_group_id and defined_node_groups of an unknown node group.
	Details map[string]any
	Err     error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Wrap returns an *Error with the given code and message whose cause is err.
func Wrap(code string, err error, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Err: err}
}

// ErrorCode returns the code of the first *Error in err's chain; EINTERNAL
// for any other non-nil error and for an *Error without a known code; "" for
// nil.
func ErrorCode(err error) string {
	var e *Error
	if err == nil {
		return ""
	} else if errors.As(err, &e) && knownCodes[e.Code] {
		return e.Code
	}
	return EINTERNAL
}

var knownCodes = map[string]bool{
	EINVALID: true, ENOTFOUND: true, ECONFLICT: true, EUNPROCESSABLE: true, EUNAVAILABLE: true, EINTERNAL: true,
}

// ErrorMessage returns the user-facing message of the first *Error in err's
// chain. Internal errors get a generic message: their detail is for logs.
func ErrorMessage(err error) string {
	var e *Error
	if err == nil {
		return ""
	} else if ErrorCode(err) != EINTERNAL && errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}
