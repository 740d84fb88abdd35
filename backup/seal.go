// Package backup owns continuous backups: the object layout in the bucket,
// sealing (zstd, then age encryption), the catalogue read back from a
// listing, the pure decisions (which base backup a restore starts from,
// which WAL it needs, what retention may delete, the recovery window), and
// the thin executors around PostgreSQL's own pg_receivewal, pg_basebackup
// and pg_verifybackup.
package backup

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"
)

// Key is the backup encryption key: an age X25519 identity
// ("AGE-SECRET-KEY-1..."). Objects are encrypted to its public recipient,
// so a reader needs the key, and a copy of the bucket alone reveals nothing.
type Key struct {
	id *age.X25519Identity
}

// GenerateKey makes a new key; its String is what goes into the secret.
func GenerateKey() (*Key, error) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return nil, err
	}
	return &Key{id: id}, nil
}

// ParseKey reads a key. The error never repeats the value.
func ParseKey(s string) (*Key, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, ErrNoKey
	}
	id, err := age.ParseX25519Identity(s)
	if err != nil {
		return nil, errors.New("BACKUP_ENCRYPTION_KEY is not an age key (it starts with AGE-SECRET-KEY-1): make one with `understudy backup keygen` and store it where .kamal/secrets reads it")
	}
	return &Key{id: id}, nil
}

// ErrNoKey: no encryption key was given.
var ErrNoKey = errors.New("no backup encryption key: set BACKUP_ENCRYPTION_KEY (make one with `understudy backup keygen`; keep a copy outside the servers, a restore needs it)")

// String is the secret form of the key.
func (k *Key) String() string { return k.id.String() }

// Recipient is the key's public half, recorded with every base backup so a
// wrong key is named before any download.
func (k *Key) Recipient() string { return k.id.Recipient().String() }

// sealer compresses then encrypts.
type sealer struct {
	z   *zstd.Encoder
	enc io.WriteCloser
}

// Seal returns a writer whose bytes reach w compressed and encrypted;
// Close finishes both (the object is not valid before it).
func (k *Key) Seal(w io.Writer) (io.WriteCloser, error) { return k.seal(w, 1) }

// SealStream is Seal for a long stream (a base backup): compression runs
// on every core, so it keeps up with pg_basebackup.
func (k *Key) SealStream(w io.Writer) (io.WriteCloser, error) {
	return k.seal(w, runtime.GOMAXPROCS(0))
}

// encrypt is the age half of Seal, for bytes compressed already.
func (k *Key) encrypt(w io.Writer) (io.WriteCloser, error) { return age.Encrypt(w, k.id.Recipient()) }

func (k *Key) seal(w io.Writer, threads int) (io.WriteCloser, error) {
	enc, err := age.Encrypt(w, k.id.Recipient())
	if err != nil {
		return nil, err
	}
	// No zstd frame checksum: age authenticates every 64 KiB of what is
	// stored, pg_verifybackup checks the base backup's files against their
	// manifest, and WAL records carry their own CRCs (4% less CPU).
	z, err := zstd.NewWriter(enc, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(threads), zstd.WithEncoderCRC(false))
	if err != nil {
		return nil, err
	}
	return &sealer{z: z, enc: enc}, nil
}

func (s *sealer) Write(p []byte) (int, error) { return s.z.Write(p) }

func (s *sealer) Close() error {
	if err := s.z.Close(); err != nil {
		return err
	}
	return s.enc.Close()
}

// Open reads a sealed object. A different key is ErrWrongKey; a damaged
// object fails authentication while it is read (ErrCorrupt).
func (k *Key) Open(r io.Reader) (io.ReadCloser, error) {
	dec, err := age.Decrypt(r, k.id)
	if err != nil {
		var nm *age.NoIdentityMatchError
		if errors.As(err, &nm) {
			return nil, ErrWrongKey
		}
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	z, err := zstd.NewReader(dec, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(256<<20))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return &opened{z: z}, nil
}

type opened struct{ z *zstd.Decoder }

func (o *opened) Read(p []byte) (int, error) {
	n, err := o.z.Read(p)
	if err != nil && err != io.EOF {
		return n, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return n, err
}

func (o *opened) Close() error { o.z.Close(); return nil }

// ErrWrongKey and ErrCorrupt are told apart so restore can say which.
var (
	ErrWrongKey = errors.New("the backup was encrypted with a different key than BACKUP_ENCRYPTION_KEY")
	ErrCorrupt  = errors.New("the object is damaged (its encryption's authentication failed)")
)
