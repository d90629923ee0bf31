pub struct ReplyEnvelope; pub struct ComposeError; pub fn compose(){} pub fn new_message_id(){}
