package platform

import "context"

type requestIDKey struct{}

// WithRequestID returns a context carrying the ID of the API request being
// served, so that every layer's log lines can name the request that caused them.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// RequestID returns the request ID ctx carries, "" when there is none.
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}
