package server

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync/atomic"
)

// TLS serves the API over HTTPS with a certificate that can be reloaded
// (on SIGHUP) without dropping connections: each new handshake takes the
// certificate loaded last.
type TLS struct {
	certFile, keyFile string
	cert              atomic.Pointer[tls.Certificate]
	config            *tls.Config
}

// NewTLS loads a certificate and key (PEM). With clientCA set, clients must
// present a certificate signed by one of its CAs: the way to pin the
// orchestrator as the only caller.
func NewTLS(certFile, keyFile, clientCA string) (*TLS, error) {
	t := &TLS{certFile: certFile, keyFile: keyFile}
	if err := t.Reload(); err != nil {
		return nil, err
	}
	t.config = &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return t.cert.Load(), nil
		},
	}
	if clientCA != "" {
		pem, err := os.ReadFile(clientCA)
		if err != nil {
			return nil, fmt.Errorf("reading client CA bundle: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("client CA bundle %s holds no PEM certificate", clientCA)
		}
		t.config.ClientCAs = pool
		t.config.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return t, nil
}

// Reload loads the certificate and key again; on error the one in use stays.
func (t *TLS) Reload() error {
	cert, err := tls.LoadX509KeyPair(t.certFile, t.keyFile)
	if err != nil {
		return fmt.Errorf("loading TLS certificate %s and key %s: %w", t.certFile, t.keyFile, err)
	}
	t.cert.Store(&cert)
	return nil
}

// Config is the server's TLS configuration.
func (t *TLS) Config() *tls.Config { return t.config }
