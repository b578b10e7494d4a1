// Command kopf-apiserver runs a real Kubernetes API server for kopf's end-to-end tests: the
// kube-apiserver of k8s.io/kubernetes with an in-process etcd, on loopback only, with data in a
// temporary directory that is removed on exit.
//
// It is started by tests/apiserver/run, which builds it when needed. Once /readyz answers, it
// writes an admin kubeconfig (static token in group system:masters) and, beside it, the files
// that tests need: the operator's own token (a separate identity, so that its requests can be
// told apart in the audit log) and the audit log itself.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

// The audit policy records one line per request (no bodies): tests count requests per user.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: None
  users: ["system:apiserver", "system:kube-controller-manager", "system:kube-scheduler"]
- level: None
  nonResourceURLs: ["/readyz*", "/livez*", "/healthz*", "/metrics", "/version", "/openapi*"]
- level: Metadata
`

type options struct {
	kubeconfig    string
	port          int
	stopOnEOF     bool
	readyTimeout  time.Duration
	apiserverArgs []string
	verbose       bool
}

func main() {
	opts, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "kopf-apiserver:", err)
		os.Exit(2)
	}
	if err := run(opts); err != nil {
		// Stdout: stderr may be the API server's log file by now.
		fmt.Println("kopf-apiserver:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (options, error) {
	var opts options
	fs := flag.NewFlagSet("kopf-apiserver", flag.ContinueOnError)
	fs.StringVar(&opts.kubeconfig, "kubeconfig", "", "where to write the admin kubeconfig once ready (required)")
	fs.IntVar(&opts.port, "port", 0, "the secure port on 127.0.0.1 (0: a free one)")
	fs.BoolVar(&opts.stopOnEOF, "stop-on-stdin-eof", false, "stop when standard input closes (the parent died)")
	fs.DurationVar(&opts.readyTimeout, "ready-timeout", 120*time.Second, "give up if /readyz does not answer within this")
	fs.BoolVar(&opts.verbose, "verbose", false, "show the API server's and etcd's logs")
	if err := fs.Parse(args); err != nil {
		return opts, err
	}
	if opts.kubeconfig == "" {
		return opts, errors.New("--kubeconfig PATH is required")
	}
	// Anything after "--" goes to kube-apiserver as it is (feature gates, say).
	opts.apiserverArgs = fs.Args()
	return opts, nil
}

func run(opts options) error {
	started := time.Now()
	dataDir, err := os.MkdirTemp("", "kopf-apiserver-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dataDir)

	etcdURL, stopEtcd, err := startEtcd(filepath.Join(dataDir, "etcd"), opts.verbose, logPath(opts.kubeconfig))
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	defer stopEtcd()

	port := opts.port
	if port == 0 {
		if port, err = freePort(); err != nil {
			return err
		}
	}
	adminToken, operatorToken := randomToken(), randomToken()
	tokens := fmt.Sprintf("%s,kopf-admin,kopf-admin,\"system:masters\"\n%s,kopf-operator,kopf-operator,\"system:masters\"\n",
		adminToken, operatorToken)
	files := map[string]string{
		"tokens.csv":        tokens,
		"audit-policy.yaml": auditPolicy,
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dataDir, name), []byte(content), 0o600); err != nil {
			return err
		}
	}
	saKey := filepath.Join(dataDir, "sa.key")
	if err := writeRSAKey(saKey); err != nil {
		return err
	}
	certDir := filepath.Join(dataDir, "certs")
	auditLog := auditLogPath(opts.kubeconfig)
	_ = os.Remove(auditLog)

	args := []string{
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		// The endpoint reconciler refuses a loopback address; nothing here needs the default/kubernetes endpoints.
		"--endpoint-reconciler-type=none",
		"--secure-port=" + strconv.Itoa(port),
		"--cert-dir=" + certDir,
		"--etcd-servers=" + etcdURL,
		// A setting only: nothing routes to these addresses, and no component here sends traffic.
		"--service-cluster-ip-range=10.0.0.0/24",
		"--authorization-mode=Node,RBAC",
		"--token-auth-file=" + filepath.Join(dataDir, "tokens.csv"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + saKey,
		"--service-account-signing-key-file=" + saKey,
		"--allow-privileged=true",
		"--audit-policy-file=" + filepath.Join(dataDir, "audit-policy.yaml"),
		"--audit-log-path=" + auditLog,
		"--audit-log-format=json",
		"--audit-log-mode=blocking",
		"--v=0",
	}
	args = append(args, opts.apiserverArgs...)

	logFile := logPath(opts.kubeconfig)
	if !opts.verbose {
		// klog writes to stderr and takes no flag to change that any more: stderr goes to the log
		// file (tests print it when they fail), this program's own messages to stdout.
		if err := redirectStderr(logFile); err != nil {
			return err
		}
	}

	cmd := app.NewAPIServerCommand()
	cmd.SetArgs(args)
	serverDone := make(chan error, 1)
	go func() { serverDone <- cmd.Execute() }()

	server := fmt.Sprintf("https://127.0.0.1:%d", port)
	if err := waitReady(server, certDir, adminToken, opts.readyTimeout, serverDone); err != nil {
		return fmt.Errorf("%w (its log: %s)", err, logFile)
	}
	if err := createDefaultServiceAccounts(server, certDir, adminToken); err != nil {
		return err
	}
	caFile := filepath.Join(certDir, "apiserver.crt")
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	if err := writeKubeconfig(opts.kubeconfig, server, ca, adminToken); err != nil {
		return err
	}
	if err := writeAtomically(operatorTokenPath(opts.kubeconfig), []byte(operatorToken)); err != nil {
		return err
	}
	defer os.Remove(opts.kubeconfig)
	defer os.Remove(operatorTokenPath(opts.kubeconfig))
	defer os.Remove(auditLog)
	defer os.Remove(logFile)
	fmt.Printf("kopf-apiserver: ready at %s in %.1fs; kubeconfig %s\n", server, time.Since(started).Seconds(), opts.kubeconfig)

	stdinClosed := make(chan struct{})
	if opts.stopOnEOF {
		go func() {
			_, _ = io.Copy(io.Discard, bufio.NewReader(os.Stdin))
			close(stdinClosed)
		}()
	}
	// The API server's own signal context stops it on SIGTERM/SIGINT; this one only notices.
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	select {
	case err := <-serverDone:
		return fmt.Errorf("the API server stopped: %v", err)
	case <-signals:
	case <-stdinClosed:
	}
	// Stopping etcd under the API server ends it; the deferred calls remove the data.
	return nil
}

func startEtcd(dir string, verbose bool, logFile string) (string, func(), error) {
	clientPort, err := freePort()
	if err != nil {
		return "", nil, err
	}
	peerPort, err := freePort()
	if err != nil {
		return "", nil, err
	}
	cfg := embed.NewConfig()
	cfg.Dir = dir
	cfg.Name = "kopf-test"
	clientURL := url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(clientPort))}
	peerURL := url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(peerPort))}
	cfg.ListenClientUrls = []url.URL{clientURL}
	cfg.AdvertiseClientUrls = []url.URL{clientURL}
	cfg.ListenPeerUrls = []url.URL{peerURL}
	cfg.AdvertisePeerUrls = []url.URL{peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.ListenMetricsUrls = nil
	if !verbose {
		cfg.LogLevel = "error"
		cfg.LogOutputs = []string{logFile}
	}
	etcd, err := embed.StartEtcd(cfg)
	if err != nil {
		return "", nil, err
	}
	select {
	case <-etcd.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		etcd.Close()
		return "", nil, errors.New("etcd was not ready within 60s")
	}
	return clientURL.String(), etcd.Close, nil
}

func waitReady(server, certDir, token string, timeout time.Duration, serverDone <-chan error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case err := <-serverDone:
			return fmt.Errorf("the API server stopped before it was ready: %v", err)
		default:
		}
		client, err := verifiedClient(filepath.Join(certDir, "apiserver.crt"))
		if err == nil {
			last = probe(client, server+"/readyz", token)
			if last == nil {
				return nil
			}
		} else {
			last = err
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("/readyz did not answer 200 within %s: %v", timeout, last)
}

// verifiedClient trusts only the serving certificate the API server generated for itself.
func verifiedClient(caFile string) (*http.Client, error) {
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("no certificate in %s", caFile)
	}
	return &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}, nil
}

func probe(client *http.Client, address, token string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, address, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %d %s", address, resp.StatusCode, body)
	}
	return nil
}

// createDefaultServiceAccounts does what the controller manager (not run here) would: pods are
// refused in a namespace without its "default" ServiceAccount.
func createDefaultServiceAccounts(server, certDir, token string) error {
	client, err := verifiedClient(filepath.Join(certDir, "apiserver.crt"))
	if err != nil {
		return err
	}
	for _, ns := range []string{"default", "kube-system", "kube-public", "kube-node-lease"} {
		body := `{"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"default"}}`
		address := fmt.Sprintf("%s/api/v1/namespaces/%s/serviceaccounts", server, ns)
		req, err := http.NewRequest(http.MethodPost, address, strings.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		text, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusConflict {
			return fmt.Errorf("creating %s/default ServiceAccount: %d %s", ns, resp.StatusCode, text)
		}
	}
	return nil
}

func writeKubeconfig(path, server string, ca []byte, token string) error {
	// JSON is YAML: kubectl, kube-rs and Python's kubernetes client all read it.
	config := map[string]any{
		"apiVersion":      "v1",
		"kind":            "Config",
		"current-context": "kopf-apiserver",
		"clusters": []any{map[string]any{
			"name":    "kopf-apiserver",
			"cluster": map[string]any{"server": server, "certificate-authority-data": ca},
		}},
		"users": []any{map[string]any{
			"name": "kopf-admin",
			"user": map[string]any{"token": token},
		}},
		"contexts": []any{map[string]any{
			"name":    "kopf-apiserver",
			"context": map[string]any{"cluster": "kopf-apiserver", "user": "kopf-admin", "namespace": "default"},
		}},
	}
	text, err := json.MarshalIndent(config, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomically(path, text)
}

// writeAtomically lets a reader that polls for the file never see it half written.
func writeAtomically(path string, content []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, content, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func operatorTokenPath(kubeconfig string) string { return kubeconfig + ".operator-token" }
func auditLogPath(kubeconfig string) string      { return kubeconfig + ".audit.jsonl" }
func logPath(kubeconfig string) string           { return kubeconfig + ".apiserver.log" }

func redirectStderr(path string) error {
	file, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if err := syscall.Dup2(int(file.Fd()), 2); err != nil {
		return fmt.Errorf("redirecting stderr to %s: %w", path, err)
	}
	return nil
}

func writeRSAKey(path string) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	block := &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}
	return os.WriteFile(path, pem.EncodeToMemory(block), 0o600)
}

func randomToken() string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
