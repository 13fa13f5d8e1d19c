// Delivery and read ticks on the user's own messages, from the other members'
// markers (receipt:update, and the page's snapshot of them). In a conversation with a
// character and no other person, the character's markers count: it "reads" what it
// answers (a reply's metadata.answers_through, or everything before the reply).

export class Receipts {
  constructor({ me, members, characterOnly }) {
    this.me = me;
    this.characterOnly = characterOnly;
    this.markers = new Map(); // "type:id" -> {delivered, read}
    this.expected = new Set(members.filter((m) => m.id !== me.id).map((m) => `user:${m.id}`));
  }

  update(user, delivered, read) {
    const key = `${user.type}:${user.id}`;
    if (user.type === "user" && user.id === this.me.id) return false;
    const known = this.markers.get(key) || { delivered: 0, read: 0 };
    const next = { delivered: Math.max(known.delivered, delivered || 0, read || 0), read: Math.max(known.read, read || 0) };
    this.markers.set(key, next);
    return next.delivered !== known.delivered || next.read !== known.read;
  }

  // A character reply seen: the character has read what it answers.
  characterReplied(message) {
    if (!message || !message.sender || message.sender.type !== "character") return false;
    const answered = (message.metadata && message.metadata.answers_through) || message.seq - 1;
    return this.update({ type: "character", id: message.sender.id }, answered, answered);
  }

  #who() {
    if (this.expected.size) return Array.from(this.expected);
    if (this.characterOnly) return Array.from(this.markers.keys()).filter((k) => k.startsWith("character:"));
    return [];
  }

  // "read", "delivered" or "sent" for an own message with this seq.
  stateOf(seq) {
    const who = this.#who();
    if (!who.length) return "sent";
    const markers = who.map((key) => this.markers.get(key) || { delivered: 0, read: 0 });
    if (markers.every((m) => m.read >= seq)) return "read";
    if (markers.every((m) => m.delivered >= seq)) return "delivered";
    return "sent";
  }
}
