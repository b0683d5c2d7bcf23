//! Publish → consume throughput per backend: rmicro's broker vs the backend's own
//! Rust client moving the same bytes, in the same run, alternating which goes
//! first. Each side: `publishers` tasks publish `messages` messages of `size` bytes
//! (waiting for each confirm where the backend confirms), one queue-group
//! subscriber acknowledges each; the clock stops when the last one is consumed.

use futures_util::StreamExt;
use rmicro::broker::{Message, SubscribeOptions};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Options of `rmicro-bench broker`.
#[derive(clap::Parser, Clone)]
pub struct BrokerArgs {
    /// Backends to measure: nats, redis, rabbitmq, mqtt (comma-separated).
    #[arg(
        long,
        default_value = "nats,redis,rabbitmq,mqtt",
        value_delimiter = ','
    )]
    backends: Vec<String>,
    /// Messages per side per round.
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Concurrent publishing tasks.
    #[arg(long, default_value_t = 16)]
    publishers: usize,
    /// Body size in bytes.
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// Rounds; the sides alternate which goes first.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
}

fn unique(kind: &str) -> String {
    format!(
        "bench.{}.{kind}.{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    )
}

/// Waits until `consumed` reaches `target`, or until nothing more arrives for 10 s
/// (a server that drops messages, e.g. Mosquitto past `max_queued_messages`);
/// returns how many arrived and when the last one did.
async fn wait_for(consumed: &AtomicUsize, target: usize) -> (usize, Instant) {
    let mut last = (consumed.load(Ordering::Relaxed), Instant::now());
    loop {
        let now = consumed.load(Ordering::Relaxed);
        if now >= target {
            return (now, Instant::now());
        }
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(10) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Messages per second over `elapsed`, noting any the server dropped.
fn rate(args: &BrokerArgs, consumed: usize, elapsed: Duration) -> Side {
    Side {
        rate: consumed as f64 / elapsed.as_secs_f64(),
        lost: args.messages.saturating_sub(consumed),
    }
}

/// CPU time this process has used so far (user + system), where Linux tells it.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces):
    // utime and stime are the 12th and 13th, in clock ticks (100 per second).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// One side's result.
struct Side {
    rate: f64,
    lost: usize,
}

/// Runs `publish(i)` for every message index across the publisher tasks.
async fn publish_all<F, Fut>(args: &BrokerArgs, publish: F) -> anyhow::Result<()>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let publish = Arc::new(publish);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..args.publishers {
        let (publish, next, total) = (publish.clone(), next.clone(), args.messages);
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok::<_, anyhow::Error>(());
                }
                publish(i).await?;
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// rmicro's side: one queue-group subscriber, publishers through `broker`.
async fn rmicro_side(
    backend: &str,
    broker: rmicro::broker::SharedBroker,
    args: &BrokerArgs,
) -> anyhow::Result<Side> {
    let topic = unique("rmicro");
    let consumed = Arc::new(AtomicUsize::new(0));
    let count = consumed.clone();
    let subscriber = broker
        .subscribe(
            &topic,
            rmicro::broker::handler(move |_d| {
                let count = count.clone();
                async move {
                    count.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
            }),
            SubscribeOptions::default().queue("bench").concurrency(32),
        )
        .await?;
    let body = bytes::Bytes::from(vec![b'x'; args.size]);
    let started = Instant::now();
    let (b, t) = (broker.clone(), topic.clone());
    publish_all(args, move |_| {
        let (b, t, body) = (b.clone(), t.clone(), body.clone());
        async move { Ok(b.publish(&t, Message::new(body)).await?) }
    })
    .await?;
    let (arrived, last) = wait_for(&consumed, args.messages).await;
    let elapsed = last.duration_since(started);
    subscriber.unsubscribe().await;
    remove_topic(backend, &topic).await?;
    Ok(rate(args, arrived, elapsed))
}

/// Deletes what the rmicro side left on the server for `topic` (a JetStream stream,
/// a Redis stream, a quorum queue), as the own-client sides do, so that repeated
/// runs do not pile up data on the machine's servers.
async fn remove_topic(backend: &str, topic: &str) -> anyhow::Result<()> {
    match backend {
        "nats" => {
            rmicro::nats::NatsBroker::jetstream(rmicro::nats::DEFAULT_ADDRESS)
                .delete_topic(topic)
                .await?
        }
        "redis" => {
            rmicro::redis::RedisBroker::new(rmicro::redis::DEFAULT_ADDRESS)?
                .delete_topic(topic)
                .await?
        }
        "rabbitmq" => {
            rmicro::rabbitmq::RabbitBroker::new(rmicro::rabbitmq::DEFAULT_ADDRESS)?
                .delete_queue(topic, "bench")
                .await?
        }
        _ => {}
    }
    Ok(())
}

async fn raw_nats(args: &BrokerArgs) -> anyhow::Result<Side> {
    use async_nats::jetstream;
    let client = async_nats::connect("127.0.0.1:4222").await?;
    let js = jetstream::new(client);
    let subject = unique("raw-nats");
    let stream_name = rmicro::nats::stream_name(&subject);
    let stream = js
        .get_or_create_stream(jetstream::stream::Config {
            name: stream_name.clone(),
            subjects: vec![subject.clone()],
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await?;
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some("bench".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await?;
    let consumed = Arc::new(AtomicUsize::new(0));
    let count = consumed.clone();
    let reader = tokio::spawn(async move {
        let mut messages = consumer.messages().await?;
        while let Some(message) = messages.next().await {
            let message = message.map_err(|e| anyhow::anyhow!(e))?;
            message.ack().await.map_err(|e| anyhow::anyhow!(e))?;
            count.fetch_add(1, Ordering::Relaxed);
        }
        Ok::<_, anyhow::Error>(())
    });
    let body = bytes::Bytes::from(vec![b'x'; args.size]);
    let started = Instant::now();
    let (j, s) = (js.clone(), subject.clone());
    publish_all(args, move |_| {
        let (j, s, body) = (j.clone(), s.clone(), body.clone());
        async move {
            j.publish(s, body).await?.await?;
            Ok(())
        }
    })
    .await?;
    let (arrived, last) = wait_for(&consumed, args.messages).await;
    let elapsed = last.duration_since(started);
    reader.abort();
    let _ = js.delete_stream(&stream_name).await;
    Ok(rate(args, arrived, elapsed))
}

async fn raw_redis(args: &BrokerArgs) -> anyhow::Result<Side> {
    let client = redis::Client::open("redis://127.0.0.1:6379")?;
    let mut publisher = client.get_multiplexed_async_connection().await?;
    let mut reader_connection = client.get_multiplexed_async_connection().await?;
    let key = unique("raw-redis");
    redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&key)
        .arg("bench")
        .arg("$")
        .arg("MKSTREAM")
        .query_async::<()>(&mut publisher)
        .await?;
    let consumed = Arc::new(AtomicUsize::new(0));
    let count = consumed.clone();
    let k = key.clone();
    let reader = tokio::spawn(async move {
        loop {
            let reply: Option<redis::streams::StreamReadReply> = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg("bench")
                .arg("c1")
                .arg("COUNT")
                .arg(32)
                .arg("BLOCK")
                .arg(100)
                .arg("STREAMS")
                .arg(&k)
                .arg(">")
                .query_async(&mut reader_connection)
                .await?;
            for stream in reply.map(|r| r.keys).unwrap_or_default() {
                if stream.ids.is_empty() {
                    continue;
                }
                // The client's natural use: one XACK for the batch read.
                let mut ack = redis::cmd("XACK");
                ack.arg(&k).arg("bench");
                for entry in &stream.ids {
                    ack.arg(&entry.id);
                }
                ack.query_async::<i64>(&mut reader_connection).await?;
                count.fetch_add(stream.ids.len(), Ordering::Relaxed);
            }
        }
        #[allow(unreachable_code)]
        Ok::<_, anyhow::Error>(())
    });
    let body = vec![b'x'; args.size];
    let started = Instant::now();
    let k = key.clone();
    publish_all(args, move |_| {
        let (mut p, k, body) = (publisher.clone(), k.clone(), body.clone());
        async move {
            redis::cmd("XADD")
                .arg(&k)
                .arg("*")
                .arg("body")
                .arg(body)
                .query_async::<String>(&mut p)
                .await?;
            Ok(())
        }
    })
    .await?;
    let (arrived, last) = wait_for(&consumed, args.messages).await;
    let elapsed = last.duration_since(started);
    reader.abort();
    let mut cleanup = client.get_multiplexed_async_connection().await?;
    redis::cmd("DEL")
        .arg(&key)
        .query_async::<()>(&mut cleanup)
        .await?;
    Ok(rate(args, arrived, elapsed))
}

async fn raw_rabbitmq(args: &BrokerArgs) -> anyhow::Result<Side> {
    use lapin::options::*;
    use lapin::types::{AMQPValue, FieldTable};
    let connection = lapin::Connection::connect(
        rmicro::rabbitmq::DEFAULT_ADDRESS,
        lapin::ConnectionProperties::default(),
    )
    .await?;
    let publisher = connection.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let exchange = "rmicro-bench-raw";
    publisher
        .exchange_declare(
            exchange.into(),
            lapin::ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let topic = unique("raw-rabbitmq");
    let queue = format!("bench.{topic}");
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    let consumer_channel = connection.create_channel().await?;
    consumer_channel
        .basic_qos(32, BasicQosOptions::default())
        .await?;
    consumer_channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            arguments,
        )
        .await?;
    consumer_channel
        .queue_bind(
            queue.as_str().into(),
            exchange.into(),
            topic.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut consumer = consumer_channel
        .basic_consume(
            queue.as_str().into(),
            "bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let consumed = Arc::new(AtomicUsize::new(0));
    let count = consumed.clone();
    let reader = tokio::spawn(async move {
        while let Some(delivery) = consumer.next().await {
            delivery?.acker.ack(BasicAckOptions::default()).await?;
            count.fetch_add(1, Ordering::Relaxed);
        }
        Ok::<_, anyhow::Error>(())
    });
    let body = vec![b'x'; args.size];
    let started = Instant::now();
    let (p, t) = (publisher.clone(), topic.clone());
    publish_all(args, move |_| {
        let (p, t, body) = (p.clone(), t.clone(), body.clone());
        async move {
            let confirm = p
                .basic_publish(
                    "rmicro-bench-raw".into(),
                    t.as_str().into(),
                    BasicPublishOptions::default(),
                    &body,
                    lapin::BasicProperties::default().with_delivery_mode(2),
                )
                .await?;
            anyhow::ensure!(confirm.await?.is_ack(), "nacked");
            Ok(())
        }
    })
    .await?;
    let (arrived, last) = wait_for(&consumed, args.messages).await;
    let elapsed = last.duration_since(started);
    reader.abort();
    let _ = publisher
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    Ok(rate(args, arrived, elapsed))
}

async fn raw_mqtt(args: &BrokerArgs) -> anyhow::Result<Side> {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let topic = unique("raw-mqtt").replace('.', "/");
    let mut sub_options = MqttOptions::new(
        format!("bench-sub-{}", std::process::id()),
        "127.0.0.1",
        1883,
    );
    sub_options.set_manual_acks(true);
    let (subscriber, mut sub_events) = AsyncClient::new(sub_options, 1024);
    subscriber
        .subscribe(format!("$share/bench/{topic}"), QoS::AtLeastOnce)
        .await?;
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = sub_events.poll().await? {
            break;
        }
    }
    let consumed = Arc::new(AtomicUsize::new(0));
    let count = consumed.clone();
    let reader = tokio::spawn(async move {
        loop {
            if let Event::Incoming(Packet::Publish(publish)) = sub_events.poll().await? {
                subscriber.ack(&publish).await?;
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        #[allow(unreachable_code)]
        Ok::<_, anyhow::Error>(())
    });
    let pub_options = MqttOptions::new(
        format!("bench-pub-{}", std::process::id()),
        "127.0.0.1",
        1883,
    );
    let (publisher, mut pub_events) = AsyncClient::new(pub_options, 1024);
    let driver = tokio::spawn(async move {
        loop {
            if pub_events.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let body = bytes::Bytes::from(vec![b'x'; args.size]);
    let started = Instant::now();
    let (p, t) = (publisher.clone(), topic.clone());
    publish_all(args, move |_| {
        let (p, t, body) = (p.clone(), t.clone(), body.clone());
        async move {
            // rumqttc's own way: hand QoS 1 publishes to its event loop.
            p.publish(t, QoS::AtLeastOnce, false, body).await?;
            Ok(())
        }
    })
    .await?;
    let (arrived, last) = wait_for(&consumed, args.messages).await;
    let elapsed = last.duration_since(started);
    reader.abort();
    driver.abort();
    Ok(rate(args, arrived, elapsed))
}

async fn raw(backend: &str, args: &BrokerArgs) -> anyhow::Result<Side> {
    match backend {
        "nats" => raw_nats(args).await,
        "redis" => raw_redis(args).await,
        "rabbitmq" => raw_rabbitmq(args).await,
        "mqtt" => raw_mqtt(args).await,
        other => anyhow::bail!("unknown backend `{other}`"),
    }
}

fn rmicro_broker(backend: &str) -> anyhow::Result<rmicro::broker::SharedBroker> {
    Ok(match backend {
        "nats" => Arc::new(rmicro::nats::NatsBroker::jetstream(
            rmicro::nats::DEFAULT_ADDRESS,
        )),
        "redis" => Arc::new(rmicro::redis::RedisBroker::new(
            rmicro::redis::DEFAULT_ADDRESS,
        )?),
        "rabbitmq" => Arc::new(rmicro::rabbitmq::RabbitBroker::new(
            rmicro::rabbitmq::DEFAULT_ADDRESS,
        )?),
        "mqtt" => Arc::new(rmicro::mqtt::MqttBroker::new(
            rmicro::mqtt::DEFAULT_ADDRESS,
        )?),
        other => anyhow::bail!("unknown backend `{other}`"),
    })
}

/// Runs the comparison and prints per-round figures and the ratio per backend.
pub async fn run(args: BrokerArgs) -> anyhow::Result<()> {
    println!(
        "publish -> consume, {} messages of {} bytes, {} publishers, 1 queue-group subscriber, {} rounds",
        args.messages, args.size, args.publishers, args.rounds
    );
    let mut summary = Vec::new();
    for backend in &args.backends {
        let broker = rmicro_broker(backend)?;
        // Each round pairs the two sides back to back; the median of the paired
        // ratios is what a noisy shared machine disturbs least.
        let mut ratios = Vec::new();
        for round in 1..=args.rounds {
            let (mut rmicro_rate, mut raw_rate) = (0.0, 0.0);
            let order: [bool; 2] = if round % 2 == 1 {
                [false, true]
            } else {
                [true, false]
            };
            for is_rmicro in order {
                let cpu_before = cpu_time();
                let result = if is_rmicro {
                    rmicro_side(backend, broker.clone(), &args).await?
                } else {
                    raw(backend, &args).await?
                };
                // The client side's CPU per message (this process: publishers and
                // subscriber), steadier than throughput on a shared machine.
                let cpu = match (cpu_before, cpu_time()) {
                    (Some(before), Some(after)) => format!(
                        "  {:5.1} µs CPU/msg",
                        (after - before).as_secs_f64() * 1e6 / args.messages as f64
                    ),
                    _ => String::new(),
                };
                let side = if is_rmicro { "rmicro" } else { "own client" };
                let lost = if result.lost > 0 {
                    format!("  ({} dropped by the server)", result.lost)
                } else {
                    String::new()
                };
                println!(
                    "  {backend:8} round {round}  {side:10}: {:9.0} msg/s{cpu}{lost}",
                    result.rate
                );
                if is_rmicro {
                    rmicro_rate = result.rate;
                } else {
                    raw_rate = result.rate;
                }
            }
            ratios.push(rmicro_rate / raw_rate);
        }
        ratios.sort_by(f64::total_cmp);
        summary.push((backend.clone(), ratios));
    }
    println!();
    for (backend, ratios) in summary {
        let (Some(low), Some(high)) = (ratios.first(), ratios.last()) else {
            continue;
        };
        let median = ratios[ratios.len() / 2];
        println!(
            "{backend:8} rmicro / own client: {median:.3}x median of {} rounds ({low:.3}x..{high:.3}x; target >= 0.9x)",
            ratios.len()
        );
    }
    Ok(())
}
