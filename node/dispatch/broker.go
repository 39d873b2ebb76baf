package dispatch

import (
	"context"
	"errors"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// The bridge reaches the broker through these small interfaces, so that
// tests can swap in an in-memory broker (dispatchtest.FakeBroker).
// DialAMQP implements them with github.com/rabbitmq/amqp091-go.

// Message is an AMQP message as the bridge reads and writes it.
type Message struct {
	Body          []byte
	Headers       map[string]any
	CorrelationID string
	ReplyTo       string
	// MessageID is AMQP's message_id. A result carries its work_id there,
	// so that a consumer can drop the copy a failover may publish again
	// (results are at least once).
	MessageID string
	// Expiration is the per-message TTL in milliseconds, as AMQP has it.
	Expiration string
}

// Acker settles one delivery.
type Acker interface {
	Ack() error
	Nack(requeue bool) error
}

// Delivery is a consumed message with its acknowledgement handle.
type Delivery struct {
	Message
	Redelivered bool
	Acker       Acker
}

// Channel is one AMQP channel as the bridge uses it.
type Channel interface {
	// DeclareQueue declares a durable queue; it is idempotent, and an
	// existing queue declared with other properties fails with
	// ErrQueueConflict.
	DeclareQueue(name string) error
	// Consume starts consuming queue with manual acks and at most prefetch
	// unacknowledged deliveries. The channel closes when the consumer ends
	// (channel or connection closed).
	Consume(queue string, prefetch int) (<-chan Delivery, error)
	// Publish sends a persistent message to queue through the default
	// exchange and returns once the broker confirmed it (nil), refused it,
	// or ctx ended.
	Publish(ctx context.Context, queue string, m Message) error
	// Close closes the channel.
	Close() error
}

// Conn is a broker connection.
type Conn interface {
	// Channel opens a channel (in confirm mode).
	Channel() (Channel, error)
	// Done is closed when the connection is lost or closed.
	Done() <-chan struct{}
	// Close closes the connection and its channels.
	Close() error
}

// Dialer opens a broker connection.
type Dialer func(ctx context.Context, url string) (Conn, error)

// Errors of the broker layer.
var (
	// ErrQueueConflict: a queue exists with properties other than the ones
	// the bridge declares (e.g. not durable); fix or delete it.
	ErrQueueConflict = errors.New("queue exists with a conflicting declaration")
	// ErrNotConfirmed: the broker refused (nacked) a publish.
	ErrNotConfirmed = errors.New("broker did not confirm the publish")
)

// DialAMQP connects to a real broker.
func DialAMQP(ctx context.Context, url string) (Conn, error) {
	_ = ctx // amqp091 has no context-aware dial; DefaultDial bounds connect and handshake
	cfg := amqp.Config{Heartbeat: 10 * time.Second, Locale: "en_US", Dial: amqp.DefaultDial(10 * time.Second)}
	c, err := amqp.DialConfig(url, cfg)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", redact(url), err)
	}
	done := make(chan struct{})
	closed := c.NotifyClose(make(chan *amqp.Error, 1))
	go func() {
		<-closed // closed by the library when the connection ends
		close(done)
	}()
	return &amqpConn{c: c, done: done}, nil
}

type amqpConn struct {
	c    *amqp.Connection
	done chan struct{}
}

var _ Conn = (*amqpConn)(nil)

func (c *amqpConn) Done() <-chan struct{} { return c.done }
func (c *amqpConn) Close() error {
	err := c.c.Close()
	if errors.Is(err, amqp.ErrClosed) {
		return nil
	}
	return err
}

func (c *amqpConn) Channel() (Channel, error) {
	ch, err := c.c.Channel()
	if err != nil {
		return nil, fmt.Errorf("open channel: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, fmt.Errorf("confirm mode: %w", err)
	}
	return &amqpChannel{ch: ch}, nil
}

type amqpChannel struct{ ch *amqp.Channel }

var _ Channel = (*amqpChannel)(nil)

func (c *amqpChannel) DeclareQueue(name string) error {
	if _, err := c.ch.QueueDeclare(name, true, false, false, false, nil); err != nil {
		var ae *amqp.Error
		if errors.As(err, &ae) && ae.Code == amqp.PreconditionFailed {
			return fmt.Errorf("declare queue %s: %w: %s (the bridge wants a durable, non-exclusive, non-auto-delete queue without arguments)",
				name, ErrQueueConflict, ae.Reason)
		}
		return fmt.Errorf("declare queue %s: %w", name, err)
	}
	return nil
}

func (c *amqpChannel) Consume(queue string, prefetch int) (<-chan Delivery, error) {
	if err := c.ch.Qos(prefetch, 0, false); err != nil {
		return nil, fmt.Errorf("qos: %w", err)
	}
	in, err := c.ch.Consume(queue, "", false, false, false, false, nil)
	if err != nil {
		return nil, fmt.Errorf("consume %s: %w", queue, err)
	}
	// Buffered to the prefetch, so that every delivery the broker has sent
	// is ready when the bridge collects its next batch: one raft entry then
	// records them all (unbuffered, a batch was one or two messages and
	// every request paid a raft round trip of its own).
	out := make(chan Delivery, prefetch)
	go func() {
		// Ends when the library closes in (channel or connection closed).
		defer close(out)
		for d := range in {
			out <- Delivery{Message: Message{Body: d.Body, Headers: d.Headers, CorrelationID: d.CorrelationId,
				ReplyTo: d.ReplyTo, Expiration: d.Expiration, MessageID: d.MessageId}, Redelivered: d.Redelivered, Acker: amqpAcker{d}}
		}
	}()
	return out, nil
}

type amqpAcker struct{ d amqp.Delivery }

func (a amqpAcker) Ack() error              { return a.d.Ack(false) }
func (a amqpAcker) Nack(requeue bool) error { return a.d.Nack(false, requeue) }

func (c *amqpChannel) Publish(ctx context.Context, queue string, m Message) error {
	dc, err := c.ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, false, false, amqp.Publishing{
		Headers: amqp.Table(m.Headers), ContentType: "application/json", DeliveryMode: amqp.Persistent,
		CorrelationId: m.CorrelationID, ReplyTo: m.ReplyTo, Expiration: m.Expiration, Body: m.Body,
		MessageId: m.MessageID, Timestamp: time.Now()})
	if err != nil {
		return fmt.Errorf("publish to %s: %w", queue, err)
	}
	ok, err := dc.WaitContext(ctx)
	if err != nil {
		return fmt.Errorf("publish to %s: %w", queue, err)
	}
	if !ok {
		return fmt.Errorf("publish to %s: %w", queue, ErrNotConfirmed)
	}
	return nil
}

func (c *amqpChannel) Close() error {
	err := c.ch.Close()
	if errors.Is(err, amqp.ErrClosed) {
		return nil
	}
	return err
}
