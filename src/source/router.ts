/** Something that takes the notifications of some channels: the sensor intake, or a logbook lane. */
export interface NotificationSink {
  notified(channel: string, payload: string): void;
}

/**
 * Channel routing: each notification goes to the sink that owns its channel. A logbook's channels go to
 * its lane; every other channel to the sensor intake, which knows the pumps' channels and counts any
 * other as a bad payload. A new kind of stream is one more sink with its channels. Owns only the map.
 */
export class ChannelRouter implements NotificationSink {
  private readonly byChannel = new Map<string, NotificationSink>();

  constructor(private readonly fallback: NotificationSink) {}

  /** Routes these channels to `sink`. */
  add(channels: Iterable<string>, sink: NotificationSink): void {
    for (const c of channels) this.byChannel.set(c, sink);
  }

  notified(channel: string, payload: string): void {
    (this.byChannel.get(channel) ?? this.fallback).notified(channel, payload);
  }
}
