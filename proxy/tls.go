package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
)

// ServerTLS returns the TLS configuration of the client listener, or nil when
// tls-cert and tls-key are not set. It reads the files, so an unreadable or
// malformed one is reported here, by the name of its setting.
func (c *Config) ServerTLS() (*tls.Config, error) {
	switch {
	case c.TLSCert == "" && c.TLSKey == "":
		if c.TLSCA != "" {
			return nil, errors.New("config: tls-ca needs tls-cert and tls-key")
		}
		return nil, nil
	case c.TLSCert == "" || c.TLSKey == "":
		return nil, errors.New("config: tls-cert and tls-key go together: give both or neither")
	}
	cert, err := loadKeyPair("tls-cert", c.TLSCert, "tls-key", c.TLSKey)
	if err != nil {
		return nil, err
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if c.TLSCA != "" {
		if conf.ClientCAs, err = loadCA("tls-ca", c.TLSCA); err != nil {
			return nil, err
		}
		conf.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return conf, nil
}

// BackendTLSConfig returns the TLS configuration shared by every backend
// connection, or nil when backend-tls is off. Its ServerName is
// backend-tls-server-name, possibly empty: see backendTLSFor.
func (c *Config) BackendTLSConfig() (*tls.Config, error) {
	if !c.BackendTLS {
		for _, s := range []struct{ name, v string }{
			{"backend-tls-ca", c.BackendTLSCA}, {"backend-tls-server-name", c.BackendTLSServerName},
			{"backend-tls-cert", c.BackendTLSCert}, {"backend-tls-key", c.BackendTLSKey},
		} {
			if s.v != "" {
				return nil, fmt.Errorf("config: %s given without backend-tls", s.name)
			}
		}
		return nil, nil
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.BackendTLSServerName}
	switch {
	case c.BackendTLSCert != "" && c.BackendTLSKey != "":
		cert, err := loadKeyPair("backend-tls-cert", c.BackendTLSCert, "backend-tls-key", c.BackendTLSKey)
		if err != nil {
			return nil, err
		}
		conf.Certificates = []tls.Certificate{cert}
	case c.BackendTLSCert != "" || c.BackendTLSKey != "":
		return nil, errors.New("config: backend-tls-cert and backend-tls-key go together: give both or neither")
	}
	if c.BackendTLSCA != "" {
		pool, err := loadCA("backend-tls-ca", c.BackendTLSCA)
		if err != nil {
			return nil, err
		}
		conf.RootCAs = pool
	}
	return conf, nil
}

// backendTLSFor returns base for a connection to addr: a copy whose ServerName,
// when not configured, is the host of addr. It returns nil when base is nil.
func backendTLSFor(base *tls.Config, addr string) *tls.Config {
	if base == nil {
		return nil
	}
	conf := base.Clone()
	if conf.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			host = addr
		}
		conf.ServerName = host
	}
	return conf
}

// loadKeyPair reads a certificate and its private key, naming the setting at fault.
func loadKeyPair(certName, certFile, keyName, keyFile string) (tls.Certificate, error) {
	certPEM, err := readPEM(certFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("config: %s: %w", certName, err)
	}
	keyPEM, err := readPEM(keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("config: %s: %w", keyName, err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("config: %s %s with %s %s: %w", certName, certFile, keyName, keyFile, err)
	}
	return cert, nil
}

// loadCA reads a PEM file of CA certificates.
func loadCA(name, file string) (*x509.CertPool, error) {
	pem, err := readPEM(file)
	if err != nil {
		return nil, fmt.Errorf("config: %s: %w", name, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("config: %s %s: no PEM certificate in it", name, file)
	}
	return pool, nil
}

// maxPEM bounds what is read of a certificate or key file.
const maxPEM = 1 << 20

// readPEM reads a regular file of at most maxPEM bytes (not a device or a pipe,
// which could block or never end).
func readPEM(file string) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil {
		return nil, err
	} else if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", file)
	} else if st.Size() > maxPEM {
		return nil, fmt.Errorf("%s is larger than %d bytes", file, maxPEM)
	}
	return io.ReadAll(io.LimitReader(f, maxPEM))
}
