//! One message through extract → decide → store, committed as one transaction.
